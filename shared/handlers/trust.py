"""Trust at the border, wired: the trust policy in force, signatures verified while planning, verdicts cached.

The policy is ``TRUST_POLICY_BLOB`` in ``MANIFESTS_CONTAINER`` (format and meaning: ``shared.core.trust``,
docs/trust.md). Absent, nothing is verified. A run is queued under the policy in force then: its bytes
are snapshotted with the manifest (``runs-work/<id>/trust-policy.yaml``) and every chunk plans under
that snapshot, so a policy uploaded mid-run does not split the run. An invalid policy makes runs
``invalid`` (nothing is imported until it is fixed): a typo must not loosen what crosses.

:class:`TrustGate` is what ``SyncEngine`` (and ``airlock lock``) asks, per entry to import: the scope
for the entry's source (most specific pattern), then, unless the scope is ``skip``, the signatures of
the digest to import found at the source (``shared.adapters.signatures.SignatureFinder``: referrers
API, referrers tag schema, cosign's ``.sig`` tag; bounded reads), verified offline against the
scope (``shared.core.trust.verify``) with the scope's trusted root: the public-good root sigstore-python
ships, or ``<TRUST_ROOTS_PREFIX><name>.json`` (the CLI: ``--trusted-roots DIR``). A 429/5xx while
looking is a ``TransientError`` (retried, then the entry fails retryable, as any plan failure).

Verdict cache: verified verdicts are kept by (image digest, scope fingerprint, trusted-root
fingerprint) in this process (an LRU of :data:`MEMORY_VERDICTS`) and in a blob shared by every instance
(``<TRUST_VERDICT_PREFIX><digest>/<sha256 of the key>.json`` in ``OUTCOMES_CONTAINER``), each with an
expiry: ``TRUST_VERDICT_TTL_SECONDS``, never past the expiry of a certificate or signature the verdict
depended on. A re-plan (on any instance) reads one blob per entry, or nothing at all, instead of
looking up and verifying again. Verdicts that did not verify are never cached: a signature attached
later counts at the next plan. The cost of one entry is one cache look-up, or one lookup and one
verification, whatever the size of its run.

Also here: the upload checks of the policy file and of trusted roots (the blob trigger), recorded once
per content in ``OUTCOMES_CONTAINER`` (``trust-policies/<sha256>.json``, ``trust-roots/<sha256>.json``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from ..core.names import blob_segment
from ..core.trust.verdict import VERIFIED, Verification, one_line
from ..errors import ConfigError, Problem, TransientError, TrustPolicyError, ValidationError
from ..telemetry import count_verification

log = logging.getLogger(__name__)

POLICY_SNAPSHOT = "trust-policy.yaml"
MEMORY_VERDICTS = 10_000  # verified verdicts one process keeps
WRITERS = 4  # threads writing verdict blobs
_PARSED_KEPT = 8  # policies and trusted roots one process keeps parsed (by content hash)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class _Lru:
    """A small thread-safe LRU map."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_policies = _Lru(_PARSED_KEPT)   # sha256 -> (TrustPolicyResult, PreparedPolicy or None)
_roots = _Lru(_PARSED_KEPT)      # sha256 -> SigstoreTrust or the ValidationError it raised
_verdicts = _Lru(MEMORY_VERDICTS)  # cache key -> (Verification, parts, expires epoch)


# --- the policy ---------------------------------------------------------------------------------------

def parse_policy(data: bytes, name: str):
    """``(TrustPolicyResult, PreparedPolicy or None)`` of a policy file, parsed once per content."""
    from ..core.trust.parse import parse_trust_policy
    from ..core.trust.verify import PreparedPolicy

    key = hashlib.sha256(data).hexdigest() + "|" + name
    found = _policies.get(key)
    if found is None:
        result = parse_trust_policy(data, name, now=_now())
        found = (result, PreparedPolicy(result.policy) if result.ok else None)
        _policies.put(key, found)
    return found


def _invalid(result) -> TrustPolicyError:
    n = len(result.errors)
    first = result.errors[0] if n else "?"
    return TrustPolicyError(f"the trust policy {result.name} is invalid ({n} problem{'s' if n != 1 else ''}; first: "
                            f"{first}); nothing is imported until it is fixed (airlock trust check)",
                            list(result.errors))


def policy_for_run(services) -> tuple[Optional[bytes], Optional[dict]]:
    """The policy a run starting now verifies under: (its bytes, the record's ``trust`` note), or
    (None, None) without one. Raises ``TrustPolicyError`` when the policy in force is invalid."""
    s = services.settings
    data = services.store.get_bytes(s.manifests_container, s.trust_policy_blob)
    if data is None:
        return None, None
    result, prepared = parse_policy(data, s.trust_policy_blob)
    if prepared is None:
        raise _invalid(result)
    return data, prepared.describe()


def policy_problem(exc: TrustPolicyError) -> dict:
    """The run record's error for an invalid policy (it names the policy file, not a manifest line)."""
    return Problem(exc.message, field="trust_policy").to_dict()


# --- the gate -----------------------------------------------------------------------------------------

class TrustGate:
    """Verdicts for the entries of one plan (see the module docstring). Thread-safe."""

    def __init__(self, prepared, finder, roots, cache: "VerdictCache", retrier=None, *,
                 now: Callable[[], datetime] = _now):
        self.prepared = prepared  # shared.core.trust.verify.PreparedPolicy
        self.finder = finder      # shared.adapters.signatures.SignatureFinder
        self.roots = roots
        self.cache = cache
        self.retrier = retrier
        self.now = now

    def describe(self) -> dict:
        return self.prepared.describe()

    def check(self, entry, digest: str):
        """The ``ScopeVerdict`` for importing ``digest`` for ``entry`` (its source names registry and
        repository). Raises ``TransientError`` / ``UpstreamError`` when the source cannot be read."""
        from ..core.trust.policy import MODE_SKIP, REQUIRE_ALL
        from ..core.trust.verify import NO_ROOT, ScopeVerdict, cache_key, skipped

        source = entry.source
        check = self.prepared.scope_for(source.registry, source.repository)
        if check is None:
            return skipped(f"no scope of the trust policy {self.prepared.policy.name} matches "
                           f"{source.registry}/{source.repository}")
        scope = check.scope
        if scope.mode == MODE_SKIP:
            verdict = skipped(f"scope {scope.name} has mode skip", scope)
            count_verification(verdict.status, scope.mode, "none")
            return verdict
        # the root's fingerprint (its bytes hashed) is enough to look the verdict up; it is parsed on a miss only
        root = self.roots.fingerprint(scope.trusted_root) if check.needs_root else NO_ROOT
        key = cache_key(digest, check.fingerprint, root or f"missing:{scope.trusted_root}")
        hit = self.cache.get(key, digest)
        if hit is not None:
            verification, parts, where = hit
            count_verification(verification.status, scope.mode, where)
            return ScopeVerdict(verification, scope.name, scope.mode, parts, cached=where)
        trust, problem = self.roots.get(scope.trusted_root) if check.needs_root else (None, None)
        image = self.finder.image(source.registry, source.repository, digest)
        what = f"signatures of {source.registry}/{source.repository}@{digest}"

        def read(place):
            return (self.retrier.call(place, what=what) if self.retrier is not None else place()).artifacts

        # cosign's tag first (one GET when there is none): a verified signature there ends the look-up, so
        # the referrers (an API call, or the tag schema and each listed manifest) are read only when needed
        tagged = read(image.cosign_tag) if check.reads_cosign_tag else ()
        verdict = None
        if tagged and scope.require != REQUIRE_ALL:
            verdict = check.verify(digest, tagged, trust=trust, trust_problem=problem, now=self.now())
        if verdict is None or verdict.status != VERIFIED:
            artifacts = (*read(image.referrers), *tagged)
            verdict = check.verify(digest, artifacts, trust=trust, trust_problem=problem, now=self.now())
        if verdict.status == VERIFIED:
            self.cache.put(key, digest, verdict)
        count_verification(verdict.status, scope.mode, "none")
        if verdict.unverified:
            log.warning("signatures of %s@%s: %s%s", source, digest, verdict.line(),
                        "; rejected" if verdict.rejected else "; let through (audit)")
        return verdict

    def flush(self, timeout: float = 60.0) -> None:
        """Wait for this gate's verdict-cache writes (a plan ends with them done)."""
        self.cache.flush(timeout)

    def unchanged(self, entry):
        """The verdict recorded for an entry that imports nothing (the ACR holds its digest already)."""
        from ..core.trust.policy import MODE_SKIP
        from ..core.trust.verify import skipped

        source = entry.source
        check = self.prepared.scope_for(source.registry, source.repository)
        if check is None:
            return skipped(f"no scope of the trust policy {self.prepared.policy.name} matches "
                           f"{source.registry}/{source.repository}")
        if check.scope.mode == MODE_SKIP:
            return skipped(f"scope {check.scope.name} has mode skip", check.scope)
        return skipped("unchanged: nothing is imported (signatures are verified when a new digest is)", check.scope)


# --- trusted roots ------------------------------------------------------------------------------------

def _parse_root(data: bytes, source: str):
    from ..core.trust.signers import SigstoreTrust

    key = hashlib.sha256(data).hexdigest()
    found = _roots.get(key)
    if found is None:
        try:
            found = SigstoreTrust(data, source=source)
        except ValidationError as exc:
            found = exc
        _roots.put(key, found)
    if isinstance(found, ValidationError):
        raise ValidationError(found.message, list(found.problems), code=found.code)
    return found


class _Roots:
    """A scope's trusted root by name (None: the public-good root): its bytes read once per gate, parsed
    (once per process and content) only when a signature has to be checked against it."""

    def __init__(self, read: Callable[[str], tuple[Optional[bytes], str]]):
        self._read = read  # name -> (bytes, where it was read) or (None, why it is not there)
        self._bytes: dict = {}
        self._found: dict = {}
        self._parsing: dict = {}
        self._lock = threading.Lock()

    def _data(self, name: Optional[str]) -> tuple[Optional[bytes], str]:
        with self._lock:
            if name in self._bytes:
                return self._bytes[name]
        if name is None:
            from ..adapters.signatures import public_good_bytes

            found = (public_good_bytes(), "Sigstore public-good trusted root (sigstore-python)")
        else:
            found = self._read(name)
        with self._lock:
            self._bytes[name] = found
        return found

    def fingerprint(self, name: Optional[str]) -> Optional[str]:
        """``sha256:<hex>`` of the root's bytes (a ``SigstoreTrust``'s fingerprint), None when there is none."""
        data, _ = self._data(name)
        return None if data is None else "sha256:" + hashlib.sha256(data).hexdigest()

    def get(self, name: Optional[str]):
        """(SigstoreTrust, None), or (None, why it is not available); parsed once, whoever asks first."""
        with self._lock:
            if name in self._found:
                return self._found[name]
            parsing = self._parsing.setdefault(name, threading.Lock())
        with parsing:  # the plan's threads ask at once: one parses, the others wait for it
            with self._lock:
                if name in self._found:
                    return self._found[name]
            return self._parse(name)

    def _parse(self, name: Optional[str]):
        data, where = self._data(name)
        if name is None:
            from ..adapters.signatures import public_good_trust

            found = (public_good_trust(), None)
        elif data is None:
            found = (None, f"trusted root {name!r} is not available: {where}")
        else:
            try:
                found = (_parse_root(data, where), None)
            except ValidationError as exc:
                found = (None, f"trusted root {name!r} is not usable: {one_line(exc.message, 200)}")
        with self._lock:
            self._found[name] = found
        return found


def store_roots(services) -> _Roots:
    s = services.settings

    def read(name: str):
        where = f"{s.trust_roots_prefix}{name}.json"
        data = services.store.get_bytes(s.manifests_container, where)
        return (data, f"{s.manifests_container}/{where}") if data is not None else (
            None, f"{s.manifests_container}/{where} does not exist")
    return _Roots(read)


def directory_roots(directory: Optional[str]) -> _Roots:
    def read(name: str):
        if directory is None:
            return None, f"no --trusted-roots DIR was given (the root would be DIR/{name}.json)"
        path = Path(directory) / f"{name}.json"
        try:
            return path.read_bytes(), str(path)
        except FileNotFoundError:
            return None, f"{path} does not exist"
        except OSError as exc:
            return None, f"{path}: {exc.strerror or exc}"
    return _Roots(read)


# --- the verdict cache --------------------------------------------------------------------------------

class VerdictCache:
    """Verified verdicts: this process's LRU, then (with a ``store``) the shared blob. A cache that cannot
    be read or written is a miss, never a failure."""

    def __init__(self, store=None, container: str = "", prefix: str = "verdicts/", ttl: float = 86400.0):
        self.store = store
        self.container = container
        self.prefix = prefix
        self.ttl = ttl
        self.blob_reads = 0
        self._writes: list = []  # pending blob writes (written beside the plan's work; ``flush`` waits)
        self._writes_lock = threading.Lock()

    def _name(self, key: str, digest: str) -> str:
        from ..core.trust.verify import cache_name

        return f"{self.prefix}{blob_segment(digest.replace(':', '-'))}/{cache_name(key)}.json"

    def get(self, key: str, digest: str):
        """(Verification, parts, "memory" | "blob") of a live cached verdict, or None."""
        if self.ttl <= 0:
            return None
        now = time.time()
        found = _verdicts.get(key)  # (Verification, parts, expires)
        if found is not None and found[2] > now:
            return found[0], found[1], "memory"
        if self.store is None:
            return None
        try:
            self.blob_reads += 1
            document = self.store.get_json(self.container, self._name(key, digest))
        except Exception as exc:  # noqa: BLE001 - a cache: unreadable is a miss
            log.debug("verdict cache read failed (%s); verifying", type(exc).__name__)
            return None
        if not document or document.get("key") != key or not isinstance(document.get("expires"), (int, float)) \
                or document["expires"] <= now:
            return None
        try:
            verification, parts = _restore(document)
        except ValueError:
            return None
        _verdicts.put(key, (verification, parts, document["expires"]))
        return verification, parts, "blob"

    def put(self, key: str, digest: str, verdict) -> None:
        from ..core.trust.verify import cache_expiry

        now = _now()
        until = cache_expiry(verdict.verification, now, self.ttl)
        if until is None:
            return
        document = {"key": key, "digest": digest, "verification": verdict.verification.to_dict(),
                    "signatures": [p.to_dict() for p in verdict.parts], "verified_at": now.isoformat(),
                    "expires": until.timestamp(), "expires_at": until.isoformat()}
        _verdicts.put(key, (verdict.verification, verdict.parts, document["expires"]))
        if self.store is None:
            return
        future = _writer().submit(self._write, self._name(key, digest), json.dumps(document).encode(), digest)
        with self._writes_lock:
            self._writes = [f for f in self._writes if not f.done()] + [future]

    def _write(self, name: str, data: bytes, digest: str) -> None:
        try:
            self.store.put_bytes(self.container, name, data, content_type="application/json")
        except Exception as exc:  # noqa: BLE001 - a cache: the next plan verifies again
            log.warning("could not write the verdict cache for %s (%s)", digest, type(exc).__name__)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait (at most ``timeout`` seconds) for the blob writes this cache started."""
        with self._writes_lock:
            pending, self._writes = self._writes, []
        wait(pending, timeout=timeout)


_writer_pool = None
_writer_lock = threading.Lock()


def _writer():
    """The threads that write verdict blobs beside the plan's own work (a plan need not wait for storage)."""
    global _writer_pool
    with _writer_lock:
        if _writer_pool is None:
            _writer_pool = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="verdict-cache")
        return _writer_pool


def _restore(document: dict) -> tuple[Verification, tuple]:
    from ..core.trust.verify import verification_from_dict

    verification = verification_from_dict(document.get("verification"))
    parts = tuple(verification_from_dict(p) for p in document.get("signatures") or ())
    return verification, parts


def clear_memory() -> None:
    """Forget this process's verdicts (tests: a re-plan "on another instance")."""
    _verdicts.clear()


# --- building gates -----------------------------------------------------------------------------------

def _finder(services):
    from ..adapters.signatures import SignatureFinder

    return SignatureFinder(services.source, deadline=services.settings.trust_lookup_deadline,
                           remember_missing_api=True)


def _gate(services, prepared, roots, cache: VerdictCache) -> TrustGate:
    return TrustGate(prepared, _finder(services), roots, cache, services.retrier)


def _store_cache(services) -> VerdictCache:
    s = services.settings
    return VerdictCache(services.store, s.outcomes_container, s.trust_verdict_prefix, s.trust_verdict_ttl)


def gate_from_storage(services) -> Optional[TrustGate]:
    """The gate of the policy in force now (None without one, or without storage settings: the command line
    may run without them, and then there is no policy to read); ``TrustPolicyError`` when it is invalid."""
    if not services.settings.has_storage:
        return None
    data, _ = policy_for_run(services)
    if data is None:
        return None
    _, prepared = parse_policy(data, services.settings.trust_policy_blob)
    return _gate(services, prepared, store_roots(services), _store_cache(services))


def gate_for_run(services, run_id: str, record: dict, snapshot: Callable[[str], str]) -> Optional[TrustGate]:
    """The gate of the policy a queued run was started under (its snapshot), or None (it had none)."""
    note = record.get("trust")
    if not note:
        return None
    s = services.settings
    data = services.store.get_bytes(s.outcomes_container, snapshot(POLICY_SNAPSHOT))
    if data is None:
        raise TransientError(f"trust policy snapshot of run {run_id} is missing", code="SnapshotMissing")
    result, prepared = parse_policy(data, note.get("policy") or s.trust_policy_blob)
    if prepared is None:
        raise _invalid(result)
    return _gate(services, prepared, store_roots(services), _store_cache(services))


def gate_from_file(services, path: str, roots_dir: Optional[str] = None) -> TrustGate:
    """The gate of a policy file (``airlock lock --trust-policy FILE``): no storage, an in-process cache."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    result, prepared = parse_policy(data, Path(path).name)
    if prepared is None:
        raise _invalid(result)
    return _gate(services, prepared, directory_roots(roots_dir), VerdictCache(ttl=services.settings.trust_verdict_ttl))


# --- upload checks ------------------------------------------------------------------------------------

def check_trust_policy_file(services, name: str, data: bytes) -> Optional[dict]:
    """An uploaded trust policy: validated, the result recorded once per content
    (``trust-policies/<sha256>.json``); returns the record (None when this content was checked already)."""
    s = services.settings
    digest = hashlib.sha256(data).hexdigest()
    result, _ = parse_policy(data, name)
    document = {"name": name, "sha256": digest, "checked_at": _now().isoformat(),
                "status": "valid" if result.ok else "invalid", **{k: v for k, v in result.to_dict().items()
                                                                   if k in ("errors", "warnings")},
                "scopes": [{"name": sc.name, "line": sc.line, "match": [p.text for p in sc.patterns], "mode": sc.mode,
                            "require": sc.require, "trusted_root": sc.trusted_root,
                            "signatures": [r.kind for r in sc.signatures]}
                           for sc in (result.policy or ())]}
    if not services.store.create_once(s.outcomes_container, f"trust-policies/{digest}.json",
                                      json.dumps(document, indent=2).encode()):
        log.info("trust policy %s (sha256 %s) was already checked; nothing to do", name, digest[:12])
        return None
    if result.ok:
        log.info("trust policy %s is valid: %d scope(s), %d warning(s)", name, len(document["scopes"]),
                 len(result.warnings))
    else:
        log.error("trust policy %s is invalid; runs are recorded invalid until it is fixed: %s", name,
                  "; ".join(str(p) for p in result.errors[:10]))
    return document


def check_trusted_root_file(services, name: str, data: bytes) -> Optional[dict]:
    """An uploaded trusted root (``<TRUST_ROOTS_PREFIX><name>.json``): parsed as a Sigstore trusted root, the
    result recorded once per content (``trust-roots/<sha256>.json``)."""
    s = services.settings
    digest = hashlib.sha256(data).hexdigest()
    document: dict = {"name": name, "sha256": digest, "checked_at": _now().isoformat()}
    try:
        trust = _parse_root(data, f"trusted root {name}")
        document.update(status="valid", fingerprint=trust.fingerprint, errors=[])
    except ValidationError as exc:
        document.update(status="invalid", errors=[{"message": exc.message}])
    if not services.store.create_once(s.outcomes_container, f"trust-roots/{digest}.json",
                                      json.dumps(document, indent=2).encode()):
        return None
    if document["status"] == "valid":
        log.info("trusted root %s is valid", name)
    else:
        log.error("trusted root %s is not a Sigstore trusted root: %s", name, document["errors"][0]["message"])
    return document


def signer_of(verdict) -> Optional[dict]:
    """The lock's ``signer`` mapping of a verified verdict: ``{kind, identity|key_id|subject, issuer}``."""
    v = verdict.verification
    if v.status != VERIFIED or v.kind is None or v.signer is None:
        return None
    name = {"keyless": "identity", "cosign-key": "key_id", "notation": "subject"}[v.kind]
    return {"kind": v.kind, name: v.signer, **({"issuer": v.issuer} if v.issuer else {})}

