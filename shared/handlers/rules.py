"""Build rules at work: the reviewed rule file, and the builds an ImagePushed event queues.

The rule file is ``BUILD_RULES_BLOB`` in ``MANIFESTS_CONTAINER`` (format: ``shared.core.rules``).
It is read on every push event, so a new file applies from the next event on; a missing file
means no rules, an invalid one queues nothing: the event record says why (``rule_file``) with
its problems, and the file's validation record is written if it was not yet. Parsing is cached
by content hash (:func:`parse_cached`), so a burst of pushes reads the blob but parses it once.

Markers in ``OUTCOMES_CONTAINER``:

    rule-runs/<rule>/<digest>.json     created once per (rule, pushed digest): a redelivered event,
                                       or a burst of pushes of one digest, queues one build per rule
    rule-builds/<run id>.json          a rule build whose output images are not known yet: its rule,
                                       its chain (``origin.chain``) and the repositories it may push
                                       to (null: a task whose steps are not visible, so anywhere).
                                       Written when it is queued; removed once its run has ended and
                                       its output images are indexed
    rule-outputs/<digest>.json         what an ended rule build pushed (its run's ``outputImages``),
                                       by digest: the run, its rule and chain, repository and tag
    rules/<sha256>.json                the validation result of an uploaded rule file

<digest> comes from the event (or the run) and is encoded as one name segment
(``shared.core.names.blob_segment``), so no event can write outside these prefixes.

The runtime cycle cut. A push that fires a rule is first matched to the build that made it, by
what builds actually pushed: ``rule-outputs/<digest>`` (an ended rule build), else the runs of
``rule-builds/`` (their ``outputImages``, repository and digest). A run that has ended and did not
push it is indexed and forgotten; a run still queued has pushed nothing. A run still going that may
have pushed it (its repositories include the pushed one, or are unknown) is waited for, polling
every few seconds, for up to ``BUILD_RULE_PRODUCER_WAIT_SECONDS`` (ACR lists a run's output images
when it ends, and a push is normally a run's last step); if it is still going then, TransientError:
the event is not recorded and Event Grid delivers it again later. The image then inherits that
build's chain, and ``shared.core.rules.chain_cut`` decides: a rule already in the chain, or a chain
of ``BUILD_RULE_MAX_CHAIN`` rules, is cut, and the event record says why and which run pushed the
image. What a rule declares (``outputs``) no longer decides anything here: a task that pushes a
repository it did not declare is matched by its output images all the same.

Pushes without a tag fire no rules: they are the per-platform manifests of a multi-platform
image, whose tagged push (the index) follows.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Optional

from ..core.pools import run_status_is_terminal
from ..core.events import AcrEvent
from ..core.names import blob_segment
from ..core.rules import Rule, RuleSet, chain_cut, parse_rules
from ..errors import AirlockError, NotFoundError, RuleFileError, TransientError
from .builds import queue_build

log = logging.getLogger(__name__)

PRODUCER_POLL_SECONDS = 2.0  # how often a running rule build that may have pushed an image is asked again
_sleep = time.sleep  # the wait between those polls (tests watch it)


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
    if not event.tag or not event.digest:
        why = "no tag (a per-platform manifest, or a push by digest)" if not event.tag else "no digest"
        return {"actions": [{"action": "skipped", "rule": r.name, "reason": why} for r in matching]}
    producer = producer_of(services, event)  # TransientError: a build still running may have pushed it
    return {"actions": [_fire(services, rule, event, producer) for rule in matching]}


def _rule_marker(rule: str, digest: str) -> str:
    return f"rule-runs/{rule}/{blob_segment(digest.replace(':', '-'))}.json"  # the digest comes from the event


def _outputs_marker(digest: str) -> str:
    return f"rule-outputs/{blob_segment(digest.replace(':', '-'))}.json"


def _build_marker(run_id: str) -> str:
    return f"rule-builds/{run_id}.json"  # a run id we were given by scheduleRun (checked by queue_build)


def producer_of(services, event: AcrEvent) -> Optional[dict]:
    """The rule build that pushed the event's image, ``{"run_id", "rule", "chain"}``; None when no rule
    build did (see the module's docstring). Raises TransientError when a rule build that may have
    pushed it is still running after ``BUILD_RULE_PRODUCER_WAIT_SECONDS``."""
    s = services.settings
    store = services.store
    indexed = store.get_json(s.outcomes_container, _outputs_marker(event.digest))
    if indexed and any(i.get("repository") == event.repository for i in indexed.get("images") or ()):
        return _producer(indexed)
    pending: dict[str, dict] = {}
    for name in store.list_names(s.outcomes_container, "rule-builds/"):
        marker = store.get_json(s.outcomes_container, name)
        if not marker or not marker.get("run_id"):
            continue
        verdict = _look_at(services, name, marker, event)
        if isinstance(verdict, dict):
            return verdict
        if verdict:
            pending[name] = marker
    deadline = time.monotonic() + s.rule_producer_wait
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            runs = ", ".join(sorted(m["run_id"] for m in pending.values()))
            log.warning("push %s@%s: rule build(s) %s still running may have pushed it; not deciding yet",
                        event.repository, event.digest, runs)
            raise TransientError(f"rule build(s) {runs}, still running after {s.rule_producer_wait:g}s, may have "
                                 f"pushed {event.repository}@{event.digest}: which rules may fire is known once "
                                 "they end (their output images)", code="ProducerStillRunning")
        _sleep(min(PRODUCER_POLL_SECONDS, left))
        for name, marker in list(pending.items()):
            verdict = _look_at(services, name, marker, event)
            if isinstance(verdict, dict):
                return verdict
            if not verdict:
                del pending[name]
    return None


def _producer(document: dict) -> dict:
    return {"run_id": document.get("run_id"), "rule": document.get("rule"), "chain": list(document.get("chain") or ())}


def _look_at(services, name: str, marker: dict, event: AcrEvent):
    """One rule build against a push: its producer dict when it pushed it, True when it still may
    (running, may push that repository), False when it did not and will not."""
    try:
        run = services.tasks.run(marker["run_id"])
    except NotFoundError:
        services.store.delete(services.settings.outcomes_container, name)
        return False
    ended = run_status_is_terminal(run.status)
    if ended:
        _index_outputs(services, name, marker, run)
    if any(o.repository == event.repository and o.digest == event.digest for o in run.outputs):
        return _producer(marker)
    if ended or run.status == "Queued":
        return False  # it ended without pushing this, or it has not started: it has pushed nothing yet
    repositories = marker.get("repositories")
    return repositories is None or event.repository in repositories


def _index_outputs(services, name: str, marker: dict, run) -> None:
    """An ended rule build: its output images by digest (rule-outputs/), then its rule-builds/ marker goes."""
    s = services.settings
    by_digest: dict[str, list[dict]] = {}
    for image in run.outputs:
        if image.digest and image.repository:
            by_digest.setdefault(image.digest, []).append({"repository": image.repository, "tag": image.tag})
    for digest, images in by_digest.items():
        document = {"digest": digest, "run_id": run.run_id, "rule": marker.get("rule"),
                    "chain": list(marker.get("chain") or ()), "images": images, "status": run.status, "at": _now_iso()}
        services.store.create_once(s.outcomes_container, _outputs_marker(digest), json.dumps(document).encode())
    services.store.delete(s.outcomes_container, name)


def _fire(services, rule: Rule, event: AcrEvent, producer: Optional[dict]) -> dict:
    s = services.settings
    store = services.store
    chain = tuple(producer["chain"]) if producer else ()
    why = chain_cut(chain, rule.name, s.rule_max_chain)
    if why is not None:
        reason = f"{why}; {event.repository}@{event.digest} was pushed by build {producer['run_id']}"
        log.warning("rule %s not fired for %s: cycle cut: %s", rule.name, event.subject, reason)
        return {"action": "cut", "rule": rule.name, "chain": list(chain), "pushed_by": producer["run_id"],
                "reason": reason}
    marker = _rule_marker(rule.name, event.digest)
    claim = {"rule": rule.name, "digest": event.digest, "event_id": event.id, "claimed_at": _now_iso()}
    if not store.create_once(s.outcomes_container, marker, json.dumps(claim).encode()):
        earlier = store.get_json(s.outcomes_container, marker) or {}
        log.info("rule %s already fired for %s; not queueing again", rule.name, event.digest)
        return {"action": "duplicate", "rule": rule.name, "digest": event.digest, "run_id": earlier.get("run_id"),
                "first_event_id": earlier.get("event_id")}
    new_chain = [*chain, rule.name]
    origin = {"rule": rule.name, "event_id": event.id, "repository": event.repository, "tag": event.tag,
              "digest": event.digest, "chain": new_chain, "pushed_by": producer["run_id"] if producer else None}
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
    store.put_json(s.outcomes_container, _build_marker(record["run_id"]),
                   {"run_id": record["run_id"], "rule": rule.name, "chain": new_chain,
                    "repositories": record["outputs"] if record.get("outputs_known") else None,
                    "queued_at": _now_iso()})
    return {"action": "queued", "rule": rule.name, "run_id": record["run_id"], "agent_pool": record["agent_pool"],
            "chain": new_chain, "scaled": record["scaling"] is not None}
