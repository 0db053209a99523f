"""Build rules at work: the reviewed rule file, and the builds an ImagePushed event queues.

The rule file is ``BUILD_RULES_BLOB`` in ``MANIFESTS_CONTAINER`` (format: ``shared.core.rules``).
It is read on every push event, so a new file applies from the next event on; a missing file
means no rules, an invalid one queues nothing: the event record says why (``rule_file``) with
its problems, and the file's validation record is written if it was not yet. Parsing is cached
by content hash (:func:`parse_cached`), so a burst of pushes reads the blob but parses it once.

Markers in ``OUTCOMES_CONTAINER``:

    rule-runs/<rule>/<digest>.json     created once per (rule, pushed digest): a redelivered event,
                                       or a burst of pushes of one digest, queues one build per rule
    build-outputs/<repository>.json    the chain of rules behind the latest rule build that writes
                                       <repository>; a push of it inherits the chain, so a rule never
                                       fires for an image its own build produced (runtime cycle cut)
    rules/<sha256>.json                the validation result of an uploaded rule file

<digest> and <repository> come from the event and are encoded as one name segment
(``shared.core.names.blob_segment``), so no event can write outside these prefixes.

Pushes without a tag fire no rules: they are the per-platform manifests of a multi-platform
image, whose tagged push (the index) follows.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Optional

from ..core.pools import run_status_is_terminal
from ..core.events import AcrEvent
from ..core.names import blob_segment
from ..core.referrers import is_attachment_tag
from ..core.rules import MAX_CHAIN, Rule, RuleSet, chain_allows, parse_rules
from ..errors import AirlockError, NotFoundError, RuleFileError, TransientError
from .builds import queue_build

log = logging.getLogger(__name__)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


_CACHE_SIZE = 8
_cache: "OrderedDict[str, object]" = OrderedDict()  # sha256 -> RuleSet or the RuleFileError
_cache_lock = threading.Lock()


def parse_cached(data: bytes) -> RuleSet:
    """``parse_rules(data)``, remembered (result or error) for the last few contents."""
    key = hashlib.sha256(data).hexdigest()
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
    if found is None:
        try:
            found = parse_rules(data)
        except RuleFileError as exc:
            found = exc
        with _cache_lock:
            _cache[key] = found
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    if isinstance(found, RuleFileError):
        raise RuleFileError(found.message, list(found.problems))
    return found  # type: ignore[return-value]


def load_rules(services) -> Optional[RuleSet]:
    """The current rule set; None when there is no rule file; RuleFileError when it is invalid."""
    data = _rule_file(services)
    return None if data is None else parse_cached(data)


def _rule_file(services) -> Optional[bytes]:
    s = services.settings
    return services.store.get_bytes(s.manifests_container, s.build_rules_blob)


def check_rule_file(services, name: str, data: bytes) -> Optional[dict]:
    """An uploaded rule file: validate it and record the result once per content (rules/<sha256>.json)."""
    s = services.settings
    digest = hashlib.sha256(data).hexdigest()
    marker = f"rules/{digest}.json"
    document: dict = {"name": name, "sha256": digest, "checked_at": _now_iso()}
    try:
        document.update(status="valid", rules=parse_cached(data).to_dict()["rules"], errors=[])
    except RuleFileError as exc:
        document.update(status="invalid", rules=[], errors=[p.to_dict() for p in exc.problems])
    if not services.store.create_once(s.outcomes_container, marker, json.dumps(document, indent=2).encode()):
        log.info("rule file %s (sha256 %s) was already checked; nothing to do", name, digest[:12])
        return None
    if document["status"] == "valid":
        log.info("rule file %s is valid: %d rule(s)", name, len(document["rules"]))
    else:
        log.error("rule file %s is invalid: %s", name,
                  "; ".join(f"line {e.get('line')}: {e['message']}" for e in document["errors"]))
    return document


def on_image_pushed(services, event: AcrEvent) -> dict:
    """Fire the rules an ImagePushed event matches: ``{"actions": [...]}`` (+ ``rule_errors``).

    Raises TransientError (after un-claiming that rule) so the event can be delivered again;
    rules already queued are then reported as duplicates.
    """
    s = services.settings
    data = _rule_file(services)
    try:
        rules = None if data is None else parse_cached(data)
    except RuleFileError as exc:
        digest = hashlib.sha256(data or b"").hexdigest()
        check_rule_file(services, s.build_rules_blob, data or b"")  # its validation record, once per content
        n = len(exc.problems)
        reason = (f"no build was queued: the build rule file {s.build_rules_blob} (sha256 {digest[:12]}) is "
                  f"invalid ({n} problem{'s' if n != 1 else ''}; first: {exc.problems[0] if n else exc.message})")
        log.error("%s; event %s", reason, event.subject or event.repository)
        return {"actions": [], "reason": reason,
                "rule_file": {"name": s.build_rules_blob, "sha256": digest, "status": "invalid",
                              "validation_record": f"rules/{digest}.json"},
                "rule_errors": [p.to_dict() for p in exc.problems]}
    if not rules:
        return {"actions": []}
    matching = rules.matching(event.repository, event.tag)
    if not matching:
        return {"actions": []}
    if not event.tag or not event.digest or is_attachment_tag(event.tag):
        why = ("no tag (a per-platform manifest, or a push by digest)" if not event.tag else "no digest"
               if not event.digest else "a signature / attestation / SBOM tag (a referrer carried with an image)")
        return {"actions": [{"action": "skipped", "rule": r.name, "reason": why} for r in matching]}
    chain = inherited_chain(services, event)
    return {"actions": [_fire(services, rule, event, chain) for rule in matching]}


def _rule_marker(rule: str, digest: str) -> str:
    return f"rule-runs/{rule}/{blob_segment(digest.replace(':', '-'))}.json"  # the digest comes from the event


def _outputs_marker(repository: str) -> str:
    return f"build-outputs/{blob_segment(repository)}.json"


def inherited_chain(services, event: AcrEvent) -> tuple[str, ...]:
    """The rules behind the build that pushed this image; () when no rule build did."""
    s = services.settings
    marker = services.store.get_json(s.outcomes_container, _outputs_marker(event.repository))
    if not marker or not marker.get("run_id"):
        return ()
    try:
        run = services.tasks.run(marker["run_id"])
    except NotFoundError:
        return ()
    produced = any(o.repository == event.repository and o.digest == event.digest for o in run.outputs)
    if run_status_is_terminal(run.status) and not produced:
        return ()  # that build is over and did not push this digest: someone else did
    return tuple(marker.get("chain") or ())


def _fire(services, rule: Rule, event: AcrEvent, chain: tuple[str, ...]) -> dict:
    s = services.settings
    store = services.store
    if not chain_allows(chain, rule.name):
        reason = (f"{rule.name} already produced this image (chain {' -> '.join(chain)})" if rule.name in chain
                  else f"the chain {' -> '.join(chain)} reached its limit of {MAX_CHAIN} rules")
        log.warning("rule %s not fired for %s: cycle cut: %s", rule.name, event.subject, reason)
        return {"action": "cut", "rule": rule.name, "chain": list(chain), "reason": reason}
    marker = _rule_marker(rule.name, event.digest)
    claim = {"rule": rule.name, "digest": event.digest, "event_id": event.id, "claimed_at": _now_iso()}
    if not store.create_once(s.outcomes_container, marker, json.dumps(claim).encode()):
        earlier = store.get_json(s.outcomes_container, marker) or {}
        log.info("rule %s already fired for %s; not queueing again", rule.name, event.digest)
        return {"action": "duplicate", "rule": rule.name, "digest": event.digest, "run_id": earlier.get("run_id"),
                "first_event_id": earlier.get("event_id")}
    new_chain = [*chain, rule.name]
    origin = {"rule": rule.name, "event_id": event.id, "repository": event.repository, "tag": event.tag,
              "digest": event.digest, "chain": new_chain}
    try:
        record = queue_build(services, rule.spec_for(event.digest), trigger="rule", origin=origin,
                             outputs=rule.outputs)
    except AirlockError as exc:
        store.delete(s.outcomes_container, marker)  # let a later delivery of this digest try again
        if isinstance(exc, TransientError):
            raise
        log.error("rule %s could not queue its build: %s: %s", rule.name, exc.code, exc.message)
        return {"action": "failed", "rule": rule.name, "error": {"code": exc.code, "message": exc.message}}
    store.put_json(s.outcomes_container, marker, {**claim, "run_id": record["run_id"]})
    for repository in record["outputs"]:
        store.put_json(s.outcomes_container, _outputs_marker(repository),
                       {"chain": new_chain, "run_id": record["run_id"], "rule": rule.name, "at": _now_iso()})
    return {"action": "queued", "rule": rule.name, "run_id": record["run_id"], "agent_pool": record["agent_pool"],
            "chain": new_chain, "scaled": record["scaling"] is not None}
