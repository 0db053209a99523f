"""The trust policy file: parsing and validating it. Pure code: no I/O.

Standard library, PyYAML (through ``shared.core.yamlfile``), ``cryptography`` (keys and
certificates are parsed, so a bad PEM is caught on upload, not at import time) and ``re2``
(google-re2: identity patterns match in linear time), ``shared.core`` and ``shared.errors``.

The file is reviewed and uploaded like the build rule file (``shared.core.rules``), and checked the
same way (on upload, and by ``airlock trust check FILE``). It is YAML (JSON, being YAML, works too)::

    version: 1                          # optional; 1 is the only version
    scopes:
      - name: kubernetes                # unique, [a-z0-9-]{1,63}
        match: registry.k8s.io/**       # a glob, or a list of globs, on registry/repository
        mode: enforce                   # enforce (default) | audit | skip
        require: any                    # any (default): one signature must verify | all
        trusted_root: corp-sigstore     # optional: an operator-supplied Sigstore trusted root
        signatures:
          - kind: keyless               # Sigstore keyless (Fulcio certificate)
            identity: krel-trust@k8s-releng-prod.iam.gserviceaccount.com   # or identity_regex
            issuer: https://accounts.google.com                           # or issuer_regex
          - kind: cosign-key            # cosign with a public key
            key: |
              -----BEGIN PUBLIC KEY-----
              ...
          - kind: notation              # Notary Project (notation) X.509 signatures
            trust_store: |              # one or more PEM certificates (a string, or a list of them)
              -----BEGIN CERTIFICATE-----
              ...
            trusted_identities:         # the signing certificate's subject, or ["*"]
              - "x509.subject: C=US, ST=WA, O=acme-rockets.io"

What each part means: scopes and modes ``shared.core.trust.policy``, globs
``shared.core.trust.patterns``, signatures ``shared.core.trust.parse_signatures``.

Errors and limits
    Validation is all-or-nothing and reports every problem as a ``Problem`` with the 1-based
    ``line`` and a ``field`` path such as ``scopes[1].signatures[0].identity_regex`` (at most
    :data:`MAX_ERRORS`, then a count). Unknown keys, wrong types, bad globs, bad PEM, bad patterns,
    empty lists, duplicate scope names, duplicate keys and YAML errors are all problems, never
    exceptions. Limits: :data:`MAX_BYTES` per file, :data:`MAX_SCOPES` scopes,
    :data:`MAX_PATTERNS` patterns and :data:`MAX_SIGNATURES` signatures per scope,
    :data:`MAX_CERTIFICATES` certificates per trust store, :data:`MAX_IDENTITIES` identities.
    Warnings (a pattern that matches any identity, a trust-store certificate that is not
    self-signed or, when ``now`` is given, not valid now) do not make the file invalid.

API
    :func:`parse_trust_policy` returns a :class:`TrustPolicyResult` (``ok``, ``policy``,
    ``errors``, ``warnings``).
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any, Mapping, Optional, Sequence, Union

import re2

from shared.core.builds import type_name
from shared.core.safeyaml import Limits
from shared.core.trust.parse_signatures import SignatureChecks
from shared.core.trust.patterns import _RE2_OPTIONS, Pattern, _check_pattern
from shared.core.trust.policy import (MAX_BYTES, MAX_ERRORS, MAX_PATTERNS, MAX_SCOPES, MODE_ENFORCE,
                                      MODE_SKIP, MODES, REQUIRE_ALL, REQUIRE_ANY, Requirement, Scope, TrustPolicy,
                                      TrustPolicyResult)
from shared.core.trust.verdict import KIND_NOTATION
from shared.core.yamlfile import Problems, Segment, Yaml12Loader, check_keys, check_name, decode, load
from shared.errors import Problem

LIMITS = Limits(max_depth=16, max_aliases=64, max_nodes=50_000)  # a trust policy is small and shallow

_TOP_KEYS = ("version", "scopes")
_SCOPE_KEYS = ("name", "match", "mode", "require", "trusted_root", "signatures")
_ROOT_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62})")


# --- validation --------------------------------------------------------------------------------

class _Loader(Yaml12Loader):
    limits = LIMITS


class _Checker(SignatureChecks):
    def __init__(self, root, now: Optional[datetime]) -> None:
        self.problems = Problems(root)
        self.warnings = Problems(root)
        self.now = now
        self.names: dict[int, str] = {}  # scope index -> its (valid) name

    def error(self, at: Sequence[Segment], message: str) -> None:
        self.problems.add(at, message)

    def warn(self, at: Sequence[Segment], message: str) -> None:
        self.warnings.add(at, message)

    def line(self, at: Sequence[Segment]) -> int:
        return self.problems.line_of(at) or 0

    def scope_label(self, index: int) -> str:
        name = self.names.get(index)
        where = f"line {self.line(('scopes', index))}"
        return f"{name!r} ({where})" if name else f"{index} ({where})"

    # -- the file --

    def policy(self, data: Any, name: str, content_hash: str) -> Optional[TrustPolicy]:
        if not isinstance(data, Mapping):
            self.error((), f"the trust policy must be a mapping with a 'scopes' list, not {type_name(data)}")
            return None
        for key in data:
            if key not in _TOP_KEYS:
                self.error((key,), f"unknown top-level key {str(key)!r}; allowed: {', '.join(_TOP_KEYS)}")
        if "version" in data and (data["version"] != 1 or isinstance(data["version"], bool)):
            self.error(("version",), f"unsupported version {data['version']!r}; the only version is 1")
        raw = data.get("scopes")
        if "scopes" not in data:
            self.error((), "the trust policy has no 'scopes' list (write 'scopes: []' for none)")
            return None
        if not isinstance(raw, list):
            self.error(("scopes",), f"scopes must be a list, not {type_name(raw)} (write 'scopes: []' for none)")
            return None
        if len(raw) > MAX_SCOPES:
            self.error(("scopes",), f"{len(raw)} scopes; the limit is {MAX_SCOPES}")
            raw = raw[:MAX_SCOPES]
        scopes: list[Scope] = []
        names: dict[str, int] = {}
        patterns: dict[str, int] = {}
        for i, item in enumerate(raw):
            scope = self.scope(i, item, names, patterns)
            if scope is not None:
                scopes.append(scope)
        if self.problems.items:
            return None
        return TrustPolicy(name, tuple(scopes), content_hash)

    def scope(self, i: int, item: Any, names: dict[str, int], patterns: dict[str, int]) -> Optional[Scope]:
        at: tuple[Segment, ...] = ("scopes", i)
        if not isinstance(item, Mapping):
            self.error(at, f"a scope must be a mapping with name, match and signatures, not {type_name(item)}")
            return None
        before = len(self.problems.items)
        check_keys(self.problems, at, item, _SCOPE_KEYS, "scope")
        name = check_name(self.problems, at, item, names, "scope")
        if name is not None:
            self.names[i] = name

        compiled = self.patterns(at, item, i, patterns)

        mode = item.get("mode", MODE_ENFORCE)
        if mode not in MODES or not isinstance(mode, str):
            shown = repr(mode) if isinstance(mode, str) else type_name(mode)
            self.error(at + ("mode",), f"invalid mode {shown}; one of {', '.join(MODES)}")
        require = item.get("require", REQUIRE_ANY)
        if require not in (REQUIRE_ANY, REQUIRE_ALL) or not isinstance(require, str):
            shown = repr(require) if isinstance(require, str) else type_name(require)
            self.error(at + ("require",), f"invalid require {shown}; any (one signature must verify) or all")
        trusted_root = item.get("trusted_root")
        if "trusted_root" in item and (not isinstance(trusted_root, str) or not _ROOT_NAME.fullmatch(trusted_root)):
            shown = repr(trusted_root) if isinstance(trusted_root, str) else type_name(trusted_root)
            self.error(at + ("trusted_root",), f"invalid trusted_root {shown}: the name of a trusted-root file "
                                               "(1-63 of a-z 0-9 . _ -, starting with a letter or digit)")

        signatures: list[Requirement] = []
        if mode == MODE_SKIP:
            for key in ("signatures", "require", "trusted_root"):
                if key in item:
                    self.error(at + (key,), f"a scope with mode skip verifies nothing: remove {key}")
        elif "signatures" not in item:
            self.error(at, "the scope has no signatures (which signatures an image must carry); "
                           "use mode: skip to import without verification")
        else:
            signatures = self.signatures(at, item["signatures"])
            if trusted_root is not None and signatures and all(r.kind == KIND_NOTATION for r in signatures):
                self.warn(at + ("trusted_root",), "trusted_root is only used by keyless and cosign-key signatures; "
                                                  "this scope has notation signatures only")
            if require == REQUIRE_ALL and len(signatures) == 1:
                self.warn(at + ("require",), "require: all with one signature is the same as any")

        if len(self.problems.items) != before:
            return None
        return Scope(name, self.line(at), tuple(compiled), mode, require, trusted_root, tuple(signatures))

    def patterns(self, at: tuple[Segment, ...], item: Mapping, i: int, seen: dict[str, int]) -> list[Pattern]:
        if "match" not in item:
            self.error(at, "the scope has no match (which source repositories it applies to)")
            return []
        raw = item["match"]
        listed = raw if isinstance(raw, list) else [raw]
        where = (lambda j: at + ("match", j)) if isinstance(raw, list) else (lambda j: at + ("match",))
        if isinstance(raw, list) and not raw:
            self.error(at + ("match",), "match is an empty list; give at least one pattern")
        if len(listed) > MAX_PATTERNS:
            self.error(at + ("match",), f"{len(listed)} patterns; the limit is {MAX_PATTERNS}")
            listed = listed[:MAX_PATTERNS]
        out: list[Pattern] = []
        for j, value in enumerate(listed):
            regex, problem = _check_pattern(value)
            if problem:
                self.error(where(j), problem)
                continue
            if value in seen:
                other = seen[value]
                self.error(where(j), f"pattern {value!r} is listed twice" if other == i else
                           f"pattern {value!r} is also in scope {self.scope_label(other)}; a pattern may be in "
                           "one scope only (which would apply?)")
                continue
            seen[value] = i
            out.append(Pattern(value, self.line(where(j)), re2.compile(regex, _RE2_OPTIONS)))
        return out


def _limited(problems: list[Problem]) -> list[Problem]:
    ordered = sorted(problems, key=lambda p: (p.line is not None, p.line or 0))
    if len(ordered) <= MAX_ERRORS:
        return ordered
    hidden = len(ordered) - MAX_ERRORS
    return ordered[:MAX_ERRORS] + [Problem(f"{hidden} more problem{'s' if hidden != 1 else ''} not listed")]


def parse_trust_policy(data: Union[bytes, str], name: str = "trust policy", *,
                       now: Optional[datetime] = None, max_bytes: int = MAX_BYTES) -> TrustPolicyResult:
    """Parse and validate a whole trust policy file; never raises for bad content.

    ``bytes`` are decoded strictly as UTF-8 (a BOM is allowed). ``name`` (the file's name) labels
    the policy and messages. ``now`` (timezone-aware), when given, adds warnings for trust-store
    certificates that are expired or not yet valid. Raises ``TypeError`` for input that is neither
    ``str`` nor ``bytes``.
    """
    if not isinstance(data, (bytes, str)):
        raise TypeError(f"trust policy must be str or bytes, not {type(data).__name__}")
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    result = TrustPolicyResult(name)
    if len(raw) > max_bytes:
        result.errors.append(Problem(f"the trust policy is {len(raw)} bytes; the limit is {max_bytes} bytes"))
        return result
    text, problem = decode(data, "trust policy")
    if problem is not None or text is None:
        result.errors.append(problem or Problem("not valid UTF-8"))
        return result
    root, loaded, load_problems, fatal = load(text, _Loader)
    if fatal:
        result.errors = _limited(load_problems)
        return result
    if root is None or loaded is None:
        result.errors = _limited(load_problems + [Problem(
            "the trust policy is empty; write 'scopes: []' for no scopes",
            line=1 if root is None else root.start_mark.line + 1)])
        return result
    checker = _Checker(root, now)
    policy = checker.policy(loaded, name, "sha256:" + hashlib.sha256(raw).hexdigest())
    result.errors = _limited(load_problems + checker.problems.items)
    result.warnings = sorted(checker.warnings.items, key=lambda p: (p.line is not None, p.line or 0))
    result.policy = policy if not result.errors else None
    return result
